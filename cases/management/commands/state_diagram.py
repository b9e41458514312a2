from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from cases.diagram import render

TARGET = Path(settings.BASE_DIR) / "docs" / "state-diagram.md"


class Command(BaseCommand):
    help = "Write docs/state-diagram.md from the state machines (Mermaid)."

    def handle(self, *args, **options):
        TARGET.parent.mkdir(exist_ok=True)
        TARGET.write_text(render(), encoding="utf-8")
        self.stdout.write(f"Wrote {TARGET}")
