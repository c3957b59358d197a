#!/usr/bin/env python3
"""Seeds the fuzz corpora from the sample events and known shapes (make fuzz)."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
corpus = ROOT / "fuzz" / "corpus"
webhook = corpus / "webhook"
webhook.mkdir(parents=True, exist_ok=True)
for event in sorted((ROOT / "events").glob("*.json")):
    body = json.loads(event.read_text()).get("body")
    if body:
        (webhook / f"seed-{event.stem}").write_text(body)
money = corpus / "money"
money.mkdir(parents=True, exist_ok=True)
for i, text in enumerate(["7,50", "1.234,56", "1,234.56", "R$ 97,00", "1e3", "-5,00", "0.1", "1.2.3,4"]):
    (money / f"seed-{i}").write_text(text)
template = corpus / "template"
template.mkdir(parents=True, exist_ok=True)
for i, text in enumerate([
    "https://trk.example.com/postback?status=approved&clickid={cid}&sum={total_price}&fname={first_name}",
    "https://trk.example.com/postback",
    "http://127.0.0.1:9/p?clickid={cid}&type=Lead&rdtk_event_id={order_id}-{random}",
]):
    (template / f"seed-{i}").write_text(text)
print(f"seeded {corpus}")
