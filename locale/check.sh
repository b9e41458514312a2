#!/usr/bin/env bash
# Refresh the Chinese catalogue from the sources and fail if anything is left untranslated or fuzzy.
#
#   bash locale/check.sh            # makemessages + checks; compiles django.mo when all is translated
#   bash locale/check.sh --no-make  # checks the existing django.po only (no makemessages)
#
# Exit status: 0 = every msgid translated, none fuzzy, formats valid; 1 = work left (listed); 2 = tool error.
# Terms: see locale/GLOSSARY.md. Chinese has one plural form: fill msgstr[0] only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PO="locale/zh_Hans/LC_MESSAGES/django.po"

if [[ "${1:-}" != "--no-make" ]]; then
  "$PY" manage.py makemessages -l zh_Hans --ignore=.venv --ignore=test-artifacts --ignore=var \
    --ignore=tests --ignore=bench >/dev/null || exit 2
fi
[[ -f "$PO" ]] || { echo "missing $PO" >&2; exit 2; }

# Placeholders, python-format flags and the header must be valid.
if ! msgfmt --check -o /dev/null "$PO"; then
  echo "FAIL: msgfmt --check found errors in $PO" >&2
  exit 1
fi

stats="$(LC_ALL=C msgfmt --statistics -o /dev/null "$PO" 2>&1)"
echo "$stats"
status=0
if grep -Eq '[0-9]+ (untranslated|fuzzy) (message|translation)' <<<"$stats"; then
  status=1
  # List what is left: untranslated entries, then fuzzy ones.
  if command -v msgattrib >/dev/null; then
    echo "--- untranslated ---"; msgattrib --untranslated --no-obsolete --no-wrap "$PO" | grep -E '^msgid ' | grep -v '^msgid ""$' || true
    echo "--- fuzzy ---";        msgattrib --only-fuzzy --no-obsolete --no-wrap "$PO" | grep -E '^msgid ' | grep -v '^msgid ""$' || true
  fi
fi

# The header must keep Chinese's single plural form.
grep -q '"Plural-Forms: nplurals=1; plural=0;\\n"' "$PO" || { echo "FAIL: Plural-Forms is not nplurals=1; plural=0;" >&2; status=1; }

if [[ $status -eq 0 ]]; then
  "$PY" manage.py compilemessages -l zh_Hans --ignore=.venv >/dev/null || exit 2
  echo "OK: all translated, django.mo compiled"
fi
exit $status
