"""Routes of the police case intake: register a case, its basis, holdings and evidence, entrust BCE."""

from django.urls import path

from . import views_intake as views

urlpatterns = [
    path("cases/new/", views.case_intake, name="case-intake"),
    path("cases/<int:pk>/", views.case_detail, name="case-detail"),
    path("cases/<int:pk>/basis/", views.case_basis, name="case-basis"),
    path("cases/<int:pk>/holdings/", views.case_holdings, name="case-holdings"),
    path("cases/<int:pk>/holdings/import/", views.case_import, name="case-import"),
    path("cases/<int:pk>/evidence/", views.case_evidence, name="case-evidence"),
    path("cases/<int:pk>/entrust/", views.case_entrust, name="case-entrust"),
    path("evidence/<int:pk>/download/", views.evidence_download, name="evidence-download"),
]
