"""The portal's routes plus one bench-only baseline view (never mounted in the portal)."""

from django.db import connection
from django.http import HttpResponse
from django.urls import path
from django.utils.html import escape

from portal.urls import urlpatterns as portal_urlpatterns

PLAIN_SQL = """
SELECT e.id, e.number, c.case_number, b.name, e.state, e.state_changed_at
FROM cases_entrustment e
JOIN cases_case c ON c.id = e.case_id
JOIN agencies_organisation b ON b.id = e.bureau_id
ORDER BY e.state_changed_at DESC, e.id DESC
LIMIT 50
"""


def plain_list(request):
    """The floor: the same 50 rows as the list's first page, one hand-written query, no templates."""
    with connection.cursor() as cursor:
        cursor.execute(PLAIN_SQL)
        rows = cursor.fetchall()
    body = "".join(f"<tr><td>{escape(r[1])}</td><td>{escape(r[2])}</td><td>{escape(r[3])}</td>"
                   f"<td>{r[4]}</td><td>{r[5]:%Y-%m-%d %H:%M}</td></tr>" for r in rows)
    return HttpResponse(f"<table>{body}</table>")


urlpatterns = [path("bench/plain/", plain_list, name="bench-plain"), *portal_urlpatterns]
