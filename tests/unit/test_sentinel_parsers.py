"""The Sentinel parsers keep their promises: the ASIM pair conforms to Email Event 1.0.0,
MessageTrace returns the table's columns, and the parameters are the ones callers use.

Why: ASIM content written for any email source (Microsoft's and the community's rules
over ``_Im_EmailEvent``) reads these parsers by field name and type; a misspelt field
is silently empty there, never an error. The result columns come from Microsoft's
parser (Kusto.Language) through ``tests/kql.py``, not from reading the text.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests import kql

# Every field of the ASIM Email Event schema 1.0.0 with its type, as the schema's own empty
# parser declares them (Azure/Azure-Sentinel Parsers/ASimEmailEvent/Parsers/vimEmailEventEmpty.yaml,
# commit ad456283ef8bc30b5821def06736abc02b31d642, "Version: '1.0.0'").
ASIM_EMAIL_EVENT_1_0_0: Mapping[str, str] = dict(
    field.split(":")
    for field in [
        "EventUid:string",
        "EventOriginalUid:string",
        "EventSchema:string",
        "EventSchemaVersion:string",
        "EventStartTime:datetime",
        "EventEndTime:datetime",
        "EventCount:int",
        "EventVendor:string",
        "EventProduct:string",
        "EventProductVersion:string",
        "EventType:string",
        "EventSubType:string",
        "EventOriginalType:string",
        "EventResult:string",
        "EventSeverity:string",
        "EventOriginalSeverity:string",
        "EventResultDetails:string",
        "EventOriginalResultDetails:string",
        "EventMessage:string",
        "EventReportUrl:string",
        "EventOwner:string",
        "AdditionalFields:dynamic",
        "AdditionalEntities:dynamic",
        "Dvc:string",
        "DvcIpAddr:string",
        "DvcHostname:string",
        "DvcDomain:string",
        "DvcDomainType:string",
        "DvcFQDN:string",
        "DvcDescription:string",
        "DvcId:string",
        "DvcIdType:string",
        "DvcMacAddr:string",
        "DvcZone:string",
        "DvcOs:string",
        "DvcOsVersion:string",
        "DvcAction:string",
        "DvcOriginalAction:string",
        "DvcInterface:string",
        "DvcScopeId:string",
        "DvcScope:string",
        "SrcUserName:string",
        "SrcUsernameType:string",
        "SrcUserId:string",
        "SrcUserIdType:string",
        "SrcUserScopeId:string",
        "SrcUserScope:string",
        "SrcUserUpn:string",
        "Src:string",
        "SrcDvcId:string",
        "SrcDvcScopeId:string",
        "SrcDvcScope:string",
        "SrcDvcIdType:string",
        "SrcDeviceType:string",
        "SrcHostname:string",
        "SrcDomain:string",
        "SrcDomainType:string",
        "SrcFQDN:string",
        "SrcDescription:string",
        "SrcIsp:string",
        "SrcGeoCountry:string",
        "SrcGeoCity:string",
        "SrcGeoRegion:string",
        "SrcGeoLongitude:real",
        "SrcGeoLatitude:real",
        "SrcIpAddr:string",
        "Dst:string",
        "DstIpAddr:string",
        "EmailToRecipients:dynamic",
        "EmailCCRecipients:dynamic",
        "EmailBCCRecipients:dynamic",
        "EmailSubject:string",
        "EmailSizeBytes:long",
        "EmailUrlCount:int",
        "EmailUrls:dynamic",
        "EmailFileCount:int",
        "EmailFiles:dynamic",
        "EmailDirection:string",
        "EmailDeliveryLocation:string",
        "EmailOriginalDeliveryLocation:string",
        "EmailLanguage:string",
        "EmailProtocolName:string",
        "EmailMailFromAddress:string",
        "EmailFromAddress:string",
        "EmailReplyToAddress:string",
        "EmailMailFromDomain:string",
        "EmailFromDomain:string",
        "EmailReplyToDomain:string",
        "EmailDmarcResult:string",
        "EmailDmarcOriginalResult:string",
        "EmailDmarcOverride:string",
        "EmailDmarcPolicy:string",
        "EmailSpfResult:string",
        "EmailSpfOriginalResult:string",
        "EmailDkimResult:string",
        "EmailDkimOriginalResult:string",
        "EmailDkimDomain:string",
        "EmailDkimSignature:string",
        "RuleName:string",
        "RuleNumber:int",
        "Rule:string",
        "RuleDescription:string",
        "ThreatId:string",
        "ThreatName:string",
        "ThreatCategory:string",
        "ThreatOriginalCategory:string",
        "ThreatRiskLevel:int",
        "ThreatOriginalRiskLevel:string",
        "ThreatIpAddr:string",
        "ThreatField:string",
        "ThreatConfidence:int",
        "ThreatOriginalConfidence:string",
        "ThreatIsActive:bool",
        "ThreatFirstReportedTime:datetime",
        "ThreatLastReportedTime:datetime",
        "IndicatorType:string",
        "IndicatorAssociation:string",
        "AttackTactics:string",
        "AttackTechniques:string",
        "AttackRemediationSteps:string",
        "User:string",
        "IpAddr:string",
    ]
)
# Fields every ASIM parser must fill (learn normalization-common-fields: mandatory) and the
# Email Event schema's mandatory ones (learn normalization-schema-email; service-facts §9).
MANDATORY = [
    "TimeGenerated",
    "EventCount",
    "EventStartTime",
    "EventEndTime",
    "EventType",
    "EventResult",
    "EventProduct",
    "EventVendor",
    "EventSchema",
    "EventSchemaVersion",
    "Dvc",
    "Dst",
    "EmailDirection",
]
# The Email Event filtering parser's parameters (learn normalization-schema-email,
# "Filtering parser parameters"), plus the `disabled` every ASIM source parser takes.
ASIM_FILTERS = [
    "starttime",
    "endtime",
    "ipaddr_has_any_prefix",
    "emailfromaddress_has_any",
    "emailrecipient_has_any",
    "emailsubject_has_any",
    "emaildirection_in",
    "emaildeliverylocation_in",
    "eventresult",
    "pack",
    "disabled",
]

PARSERS = {parser.name: parser for parser in kql.parsers()}


@pytest.fixture(scope="module")
def columns() -> dict[str, dict[str, str]]:
    calls = [
        kql.KqlText("ASim", "ASimEmailEventMicrosoftMessageTrace"),
        kql.KqlText("vim", "vimEmailEventMicrosoftMessageTrace(starttime = ago(1d))"),
        kql.KqlText("MessageTrace", "MessageTrace()"),
        kql.KqlText("MessageTrace history", "MessageTrace(history = true)"),
    ]
    return kql.analyze_columns(calls)


def test_the_parsers_are_named_by_the_asim_convention_and_nothing_is_named_emailevents():
    assert set(PARSERS) == {
        "MessageTrace",
        "ASimEmailEventMicrosoftMessageTrace",
        "vimEmailEventMicrosoftMessageTrace",
    }
    # EmailEvents is Defender XDR's table: a function of that name would shadow it.
    assert not [name for name in PARSERS if name.lower().startswith("emailevents")]


@pytest.mark.parametrize("call", ["ASim", "vim"])
def test_asim_parser_returns_only_schema_fields_with_the_schema_types(columns, call):
    found = columns[call]
    not_in_schema = sorted(set(found) - set(ASIM_EMAIL_EVENT_1_0_0) - {"TimeGenerated"})
    wrong_type = {
        name: (kind, ASIM_EMAIL_EVENT_1_0_0[name])
        for name, kind in found.items()
        if name in ASIM_EMAIL_EVENT_1_0_0 and kind != ASIM_EMAIL_EVENT_1_0_0[name]
    }

    assert not not_in_schema
    assert not wrong_type
    assert [name for name in MANDATORY if name not in found] == []


def test_vim_parser_takes_every_email_event_filter_parameter_with_the_documented_defaults():
    vim = PARSERS["vimEmailEventMicrosoftMessageTrace"]

    assert [name for name, _, _ in vim.parameters] == ASIM_FILTERS
    defaults = {name: (kind, default) for name, kind, default in vim.parameters}
    assert defaults["starttime"] == ("datetime", "datetime(null)")
    assert defaults["emailrecipient_has_any"] == ("dynamic", "dynamic([])")
    assert defaults["eventresult"] == ("string", "'*'")
    assert defaults["pack"] == ("bool", "false")
    asim = PARSERS["ASimEmailEventMicrosoftMessageTrace"]
    assert [name for name, _, _ in asim.parameters] == ["pack", "disabled"]


def test_message_trace_returns_the_table_columns_and_when_each_row_arrived(columns):
    table = kql.connector_schema()
    expected = {
        **kql.STANDARD_COLUMNS,
        **{column.name: column.type for column in table.columns},
        "IngestedAt": "datetime",
    }

    assert columns["MessageTrace"] == expected
    assert columns["MessageTrace history"] == expected
