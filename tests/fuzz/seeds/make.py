#!/usr/bin/env python3
"""Writes per-entity seeds for the Salesforce fuzz targets (tests/fuzz/seeds/<target>/).

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


if __name__ == "__main__":
    cdc()
    soap()
