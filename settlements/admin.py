from django.contrib import admin

from cases.admin import RecordAdmin

from .models import FxConversion, OffshoreReceipt, SpecialAccountCredit, TreasuryRemittance, VictimReturn

for model in (OffshoreReceipt, FxConversion, SpecialAccountCredit, TreasuryRemittance, VictimReturn):
    admin.site.register(model, RecordAdmin)
