#!/usr/bin/env python3
"""Writes seeds for the Salesforce, Dataverse and F&O fuzz targets (tests/fuzz/seeds/<target>/).

The reference samples in tests/fixtures are one Order Outbound Message, one Order change
event in an EventBridge envelope and one Account change event as a bare payload, which the
targets refuse at once (their org allow-list is set, and a bare payload names no org). So
most of the parsers' branches (Contact, Product2, Quote, the line items and their parents,
every changeType, the AppFlow envelope) start unreached, and a fuzzer finds an entity name
byte by byte only by luck. These seeds carry each entity and change type in the formats of
../shared/reference (the same fields the fixtures have). Run it again when a parser learns
an entity:  python3 tests/fuzz/seeds/make.py
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]
SEEDS = ROOT / "tests/fuzz/seeds"
ORG = "00D5f000005KcCnEAK"
SOURCE = f"aws.partner/salesforce.com/{ORG}/0YL5f000000CabWGAS"

# Each entity's record id and the fields a record of it carries (references as plain ids,
# as Salesforce sends them).
ENTITIES = {
    "Account": ("0015f00002J9YYEAA3", {
        "Name": "Fabrikam Industrial", "AccountNumber": "ACC-01042",
        "ERP_Customer_Number__c": "C000123", "ParentId": "0015f00002J9YZZAA3",
        "BillingAddress": {"Street": "1 Main St", "City": "Bellevue", "PostalCode": "98004",
                           "Country": "US"},
        "Phone": "+1 425 555 0100", "CurrencyIsoCode": "USD",
    }),
    "Contact": ("0035f00001AbCdEAAZ", {
        "FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com",
        "AccountId": "0015f00002J9YYEAA3",
    }),
    "Product2": ("01t5f000003XyZaAAC", {
        "Name": "Hydraulic pump", "ProductCode": "P-200", "IsActive": True,
        "QuantityUnitOfMeasure": "Each",
    }),
    "Quote": ("0Q05f000000AbCdCAK", {
        "Name": "Pumps for Q3", "QuoteNumber": "00000042", "Status": "Presented",
        "AccountId": "0015f00002J9YYEAA3", "ContactId": "0035f00001AbCdEAAZ",
        "GrandTotal": 18400.0,
    }),
    "QuoteLineItem": ("0QL5f000000AbCdGAK", {
        "QuoteId": "0Q05f000000AbCdCAK", "Product2Id": "01t5f000003XyZaAAC",
        "Quantity": 40.0, "UnitPrice": 460.0,
    }),
    "Order": ("8015f000000Xy1QAAS", {
        "OrderNumber": "00000123", "Status": "Activated", "EffectiveDate": "2026-05-14",
        "AccountId": "0015f00002J9YYEAA3", "BillToContactId": "0035f00001AbCdEAAZ",
        "ShipToContactId": "0035f00001AbCdEAAZ", "QuoteId": "0Q05f000000AbCdCAK",
        "Pricebook2Id": "01s5f000000AbcdAAC", "TotalAmount": 18400.0,
    }),
    "OrderItem": ("8025f000000Xy1QAAS", {
        "OrderId": "8015f000000Xy1QAAS", "Product2Id": "01t5f000003XyZaAAC",
        "Quantity": 40.0, "UnitPrice": 460.0,
    }),
}

CHANGE_TYPES = ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE",
                "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"]


def header(entity, record_id, change_type, fields):
    return {
        "entityName": entity,
        "recordIds": [record_id],
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/",
        "transactionKey": "0001ade9-3f74-0b99-dbc4-42e73424b774",
        "sequenceNumber": 1,
        "commitTimestamp": 1778749965000,
        "commitNumber": 1778749965433528300,
        "commitUser": "0055f000005mc66AAA",
        "nulledFields": ["Phone"] if change_type == "UPDATE" else [],
        "diffFields": [],
        "changedFields": sorted(fields) if change_type == "UPDATE" else [],
    }


def cdc():
    out = SEEDS / "salesforce_cdc"
    out.mkdir(exist_ok=True)
    n = 0
    for entity, (record_id, fields) in ENTITIES.items():
        for change_type in CHANGE_TYPES:
            payload = {"ChangeEventHeader": header(entity, record_id, change_type, fields)}
            if change_type in ("CREATE", "UPDATE", "UNDELETE"):
                payload.update(fields)
            # The EventBridge envelope (the event under detail.payload) for every entity and
            # change type; AppFlow's (the event as the detail) once per entity.
            envelopes = [("eventbridge", {"payload": payload})]
            if change_type == "CREATE":
                envelopes.append(("appflow", payload))
            for name, detail in envelopes:
                doc = {
                    "version": "0", "id": "7b3e0c2a-91f4-4d5e-b0a1-3c9f6d2e8a47",
                    "detail-type": f"{entity}ChangeEvent", "source": SOURCE,
                    "account": "123456789012", "time": "2026-05-14T09:12:46Z",
                    "region": "eu-west-1", "resources": [], "detail": detail,
                }
                path = out / f"{entity.lower()}_{change_type.lower()}_{name}.json"
                path.write_text(json.dumps(doc, indent=1) + "\n")
                n += 1
    print(f"tests/fuzz/seeds/salesforce_cdc: {n} seeds")


def xml_fields(fields, indent):
    lines = []
    for k, v in fields.items():
        if isinstance(v, dict):
            continue  # compound fields are not sent in Outbound Messages
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        lines.append(f"{indent}<sf:{k}>{text}</sf:{k}>")
    return "\n".join(lines)


def notification(entity, record_id, fields, n):
    return f"""      <Notification>
        <Id>04l5f00000Gx7Q{n}AAJ</Id>
        <sObject xsi:type="sf:{entity}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
          <sf:Id>{record_id}</sf:Id>
{xml_fields(fields, "          ")}
          <sf:LastModifiedDate>2026-05-14T09:20:03.000Z</sf:LastModifiedDate>
        </sObject>
      </Notification>"""


def envelope(notifications):
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <soapenv:Body>
    <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
      <OrganizationId>{ORG}</OrganizationId>
      <ActionId>04k5f000000CaRkAAK</ActionId>
      <SessionId xsi:nil="true"/>
      <EnterpriseUrl>https://contoso.my.salesforce.com/services/Soap/c/62.0/00D5f000005KcCn</EnterpriseUrl>
      <PartnerUrl>https://contoso.my.salesforce.com/services/Soap/u/62.0/00D5f000005KcCn</PartnerUrl>
{notifications}
    </notifications>
  </soapenv:Body>
</soapenv:Envelope>
"""


def soap():
    out = SEEDS / "salesforce_soap"
    out.mkdir(exist_ok=True)
    n = 0
    for entity, (record_id, fields) in ENTITIES.items():
        (out / f"{entity.lower()}.xml").write_text(
            envelope(notification(entity, record_id, fields, 1)))
        n += 1
    # One message with several notifications, of several entities.
    many = "\n".join(notification(e, r, f, i)
                     for i, (e, (r, f)) in enumerate(ENTITIES.items()))
    (out / "several.xml").write_text(envelope(many))
    print(f"tests/fuzz/seeds/salesforce_soap: {n + 1} seeds")


def dataverse():
    """The Dataverse messages the reference fixtures lack, built from the account update.

    A Delete (its Target an EntityReference, the record in a PreImage) and an Update whose
    RowVersion is a JSON number. Neither was ever reached by five runs of the target: which
    message or which JSON type it was changes the event through a select, not a branch, so
    libFuzzer's edge counters do not see it and never keep an input that reaches it
    (tests/fuzz/regions.sh, which counts p2c's source regions, showed both never run)."""
    out = SEEDS / "dataverse"
    out.mkdir(exist_ok=True)
    update = json.loads((ROOT / "tests/fixtures/dataverse_account_update.json").read_text())
    target = update["InputParameters"][0]["value"]

    delete = json.loads(json.dumps(update))
    delete["MessageName"] = "Delete"
    delete["InputParameters"] = [{"key": "Target", "value": {
        "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
        "Id": target["Id"], "KeyAttributes": [], "LogicalName": target["LogicalName"],
        "Name": None, "RowVersion": None}}]
    delete["PostEntityImages"] = []
    (out / "account_delete.json").write_text(json.dumps(delete, indent=2) + "\n")

    numeric = json.loads(json.dumps(update))
    numeric["InputParameters"][0]["value"]["RowVersion"] = int(target["RowVersion"])
    (out / "account_update_rowversion_number.json").write_text(
        json.dumps(numeric, indent=2) + "\n")
    print("tests/fuzz/seeds/dataverse: 2 seeds")


# The F&O data entities p2c reads data events of: (virtual table, key field, key).
FO_ENTITIES = [
    ("mserp_salesorderheaderv2entity", "mserp_salesordernumber", "000731"),
    ("mserp_custcustomerv3entity", "mserp_customeraccount", "US-001"),
    ("mserp_releasedproductv2entity", "mserp_itemnumber", "P-200"),
    ("mserp_salesquotationheaderv2entity", "mserp_salesquotationnumber", "SQ-00042"),
]


def fin_ops():
    """F&O data events as the Power Platform integration proxies them (a Dataverse
    RemoteExecutionContext naming the virtual table, as tests/fin_ops.rs posts them).

    The fixtures hold business events only, and from them five runs of the target never
    built a data event that names a known table and carries its key and dataAreaId: the
    whole of the data event's reading past the key (fo.rs) stayed unfuzzed
    (tests/fuzz/regions.sh showed it). One seed per entity and message; the key in the
    Target, or only in a PreImage for a Delete."""
    out = SEEDS / "fin_ops"
    out.mkdir(exist_ok=True)
    for table, key_field, key in FO_ENTITIES:
        for message in ("Create", "Update", "Delete"):
            attributes = [{"key": "mserp_dataareaid", "value": "USMF"},
                          {"key": key_field, "value": key}]
            record = {"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                      "LogicalName": table, "Attributes": attributes}
            event = {
                "MessageName": message, "PrimaryEntityName": table,
                "PrimaryEntityId": "5b1e3d75-a749-ef11-acce-00224802d26d",
                "OperationId": f"op-{message.lower()}-{key}",
                "CorrelationId": "c1b3a8e0-0000-4000-8000-000000000001", "Depth": 1,
                "OperationCreatedOn": "/Date(1778753145000+0000)/",
                "InitiatingUserAzureActiveDirectoryObjectId":
                    "{C600136F-6814-41D9-8642-40CA0EC4EDD4}",
                "InputParameters": [{"key": "Target", "value": record}],
                "PostEntityImages": [], "PreEntityImages": [],
            }
            if message == "Delete":
                event["InputParameters"] = [{"key": "Target", "value": {
                    "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                    "Id": event["PrimaryEntityId"], "LogicalName": table, "Name": None}}]
                event["PreEntityImages"] = [{"key": "PreImage", "value": record}]
                del event["OperationId"]  # the RequestId names it then
                event["RequestId"] = f"req-delete-{key}"
            name = table.removeprefix("mserp_").removesuffix("entity")
            (out / f"{name}_{message.lower()}.json").write_text(
                json.dumps(event, indent=2) + "\n")
    print(f"tests/fuzz/seeds/fin_ops: {len(FO_ENTITIES) * 3} seeds")


if __name__ == "__main__":
    cdc()
    soap()
    dataverse()
    fin_ops()
