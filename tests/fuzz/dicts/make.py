#!/usr/bin/env python3
"""Writes a libFuzzer dictionary per fuzz target (tests/fuzz/dicts/<target>.dict).

A parser branches on names: a Dataverse `MessageName`, a Business Central `changeType`, a
Salesforce `entityName`, a rule's input field. The fuzzer finds such a name byte by byte
only by luck (the secret checks compare in constant time, and a `match` on strings is
not always a comparison it can see), so each target gets the string literals of the code
it reaches, the field names the rules read, and its format's syntax. Run it again when a
parser learns a new name:  python3 tests/fuzz/dicts/make.py
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[3]
INBOUND = ROOT / "functions/core/src/inbound"
DOMAIN = ROOT / "functions/core/src/domain.rs"

JSON = ['{', '}', '[', ']', ':', ',', '"', 'null', 'true', 'false', '-1', '0', '1e99',
        '0.00000001', '18446744073709551616', '\\u0000', '\\ud800', '\\"', '\\\\']
XML = ['<?xml version="1.0" encoding="UTF-8"?>', '<!DOCTYPE', '<!ENTITY', 'SYSTEM',
       '<![CDATA[', ']]>', '&amp;', '&lt;', '&#x41;', '&#65;', '&xxe;', '<!--', '-->',
       'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"',
       'xmlns:sf="urn:sobject.enterprise.soap.sforce.com"',
       'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"',
       'xsi:type="sf:', 'xsi:nil="true"', 'soapenv:', 'sf:', '</', '/>']
DATAVERSE_TYPES = [
    'EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts',
    'Entity:http://schemas.microsoft.com/xrm/2011/Contracts',
    'Money:http://schemas.microsoft.com/xrm/2011/Contracts',
    'OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts',
    'KeyValuePairOfstringanyType:#System.Collections.Generic',
    '/Date(1763900000000)/', '/Date(-62135596800000+0100)/', 'Update',
]
QUERY = ['validationToken=', '&', '=', '%', '%00', '%zz', '+', '?']


def literals(path):
    """The string literals of a Rust file's non-test code that look like names."""
    text = path.read_text().split("#[cfg(test)]")[0]
    found = re.findall(r'"((?:[^"\\\n]|\\.){2,80})"', text)
    return [f for f in found if "{" not in f and " " not in f and "`" not in f]


def domain_names():
    """The snake_case and renamed variant names the domain's enums serialise as."""
    text = DOMAIN.read_text().split("#[cfg(test)]")[0]
    names = re.findall(r'rename = "([^"]+)"', text)
    for body in re.findall(r'rename_all = "snake_case"\)\]\s*pub enum \w+ \{(.*?)\n\}', text, re.S):
        for variant in re.findall(r'^\s+([A-Z]\w*)', body, re.M):
            names.append(re.sub(r'(?<!^)(?=[A-Z])', '_', variant).lower())
    return names


def rule_fields():
    """The field names and string literals of the shipped rules."""
    out = []
    for script in sorted((ROOT / "rules").rglob("*.rhai")):
        text = script.read_text()
        out += re.findall(r'\.([a-z_][a-z0-9_]{1,40})\b', text)
        out += re.findall(r'"([^"\\\n]{1,40})"', text)
    for table in sorted((ROOT / "rules").glob("*.toml")):
        out += re.findall(r'^\s*"?([A-Za-z0-9 _\-]{1,40})"?\s*=', table.read_text(), re.M)
    return out


def entry(token):
    quoted = "".join(
        c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else
        ("\\" + c if c in '"\\' else "".join(f"\\x{b:02x}" for b in c.encode()))
        for c in token
    )
    return f'"{quoted}"'


# libFuzzer keeps dictionary words of at most 64 bytes and drops longer ones silently.
MAX_WORD = 64


def write(target, tokens):
    seen, lines = set(), [f"# {target}: written by tests/fuzz/dicts/make.py"]
    for t in tokens:
        if t and t not in seen and len(t.encode()) <= MAX_WORD:
            seen.add(t)
            lines.append(entry(t))
            # A JSON key as it appears in a body, too.
            if re.fullmatch(r'[A-Za-z_@][\w.@/:-]*', t) and t not in ("null", "true", "false"):
                key = f'"{t}":'
                if key not in seen and len(key.encode()) <= MAX_WORD:
                    seen.add(key)
                    lines.append(entry(key))
    (ROOT / "tests/fuzz/dicts" / f"{target}.dict").write_text("\n".join(lines) + "\n")
    print(f"tests/fuzz/dicts/{target}.dict: {len(lines) - 1} entries")


mod = literals(INBOUND / "mod.rs")
write("dataverse", literals(INBOUND / "dataverse.rs") + DATAVERSE_TYPES + mod + JSON)
write("business_central", literals(INBOUND / "bc.rs") + QUERY + mod + JSON)
salesforce = literals(INBOUND / "salesforce.rs")
write("salesforce_cdc", salesforce + ["00D5f000005KcCnEAK", "001", "801", "0Q0"] + JSON)
write("salesforce_soap", salesforce + ["00D5f000005KcCnEAK", "00D5f000005KcCn"] + XML)
write("fin_ops", literals(INBOUND / "fo.rs") + literals(INBOUND / "dataverse.rs") + mod + JSON)
write("generic", literals(INBOUND / "generic.rs") + domain_names() + mod + JSON)
write("rules", rule_fields() + domain_names() + JSON)
