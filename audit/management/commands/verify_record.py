"""Walk the record chain and report the first break; exit status 1 if there is one.

    python manage.py verify_record
    python manage.py verify_record --expect 1234:5f3a...   # a head printed on a final disposal report
"""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify


def expected_head(text: str) -> tuple[int, str]:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise CommandError("--expect takes SEQ:HASH, e.g. 1234:<64 hex digits>")
    return int(seq), digest.lower()


class Command(BaseCommand):
    help = "Check the hash chain over business events and history rows; report the first break."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default")
        parser.add_argument("--chunk", type=int, default=2000, help="links read per query")
        parser.add_argument("--expect", type=expected_head, help="SEQ:HASH printed earlier that must still hold")

    def handle(self, *args, database, chunk, expect, **options):
        result = verify(using=database, chunk=chunk, expect=expect)
        if result.ok:
            self.stdout.write(f"OK: {result.count} links, head #{result.head_seq} {result.head_hash}")
            return
        raise CommandError(f"BROKEN at {result.first_break} — {result.count} links intact before it, "
                           f"last good #{result.head_seq} {result.head_hash}", returncode=1)
