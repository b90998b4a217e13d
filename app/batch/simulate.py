"""POS simulator: realistic receipts (and CRM profiles) for the demo, tests and benchmarks.

Archetypes: VIP regulars (almost daily), loyal (every 2-4 days), occasional (weekly-ish),
one-timers, churners (regular, then gone), rare (every 1-4 months); coffee, tea or food
baskets; returns (most of them full refunds naming the original receipt), anonymous sales,
duplicate sends, late arrivals (emitted up to 3 days after their place) and a small share of
malformed lines. CRM profiles for 60% of them (name, family, contacts, consent, labels...) and
for a few clients registered lately who have bought nothing yet; the communication events of
the profiled clients are in :mod:`app.batch.simulate_comm`. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import orjson

ARCHETYPES = (  # name, share, (min, max) days between visits, churn?
    ("vip", 0.05, (0.6, 1.4), False),
    ("loyal", 0.15, (2.0, 4.0), False),
    ("occasional", 0.25, (5.0, 12.0), False),
    ("one_timer", 0.20, (0.0, 0.0), False),
    ("churner", 0.20, (1.5, 5.0), True),
    ("rare", 0.15, (30.0, 120.0), False),
)
BASKETS = {
    "coffee": (("coffee", 0.7), ("dessert", 0.2), ("food", 0.1)),
    "tea": (("tea", 0.7), ("dessert", 0.2), ("food", 0.1)),
    "food": (("food", 0.6), ("coffee", 0.2), ("tea", 0.2)),
}
PRICES = {"coffee": (180, 450), "tea": (150, 350), "dessert": (200, 400), "food": (300, 900)}
MALFORMED = (
    b"{not json",
    b'{"receipt_id": "bad-1", "type": "sale", "total": "10.00"}',
    b'{"receipt_id": "bad-2", "client_id": "c-x", "occurred_at": "2026-01-01T10:00:00+03:00",'
    b' "type": "sale", "total": "-5.00"}',
    b'{"receipt_id": "bad-3", "client_id": "c-x", "occurred_at": "2026-01-01T10:00:00+03:00",'
    b' "type": "refund", "total": "5.00"}',
    b'["an", "array"]',
)


DEFAULT_END = datetime(2026, 6, 1, tzinfo=timezone(timedelta(hours=3)))


@dataclass(frozen=True, slots=True)
class SimConfig:
    clients: int = 1000
    days: int = 90
    seed: int = 1
    end: datetime = DEFAULT_END
    store_count: int = 5
    dup_rate: float = 0.01
    late_rate: float = 0.02
    anon_rate: float = 0.03
    return_rate: float = 0.02
    malformed_rate: float = 0.002
    new_clients: float = 0.04  # profile-only clients (no purchase yet), a share of ``clients``


def _money(kop: int) -> str:
    return f"{kop // 100}.{kop % 100:02d}"


def _item(rng: random.Random, basket: tuple[tuple[str, float], ...], half_rubles: bool) -> dict[str, Any]:
    """One receipt line drawn from a basket's category weights and the category's prices."""
    cat = rng.choices([c for c, _ in basket], [w for _, w in basket])[0]
    p_lo, p_hi = PRICES[cat]
    sku = f"{cat}-{rng.randrange(5)}"
    kopecks = rng.randrange(p_lo, p_hi) * 100 + (rng.choice((0, 50)) if half_rubles else 0)
    return {"sku": sku, "category": cat, "qty": 1, "amount": _money(kopecks)}


def _client_receipts(rng: random.Random, cfg: SimConfig, n: int) -> Iterator[dict[str, Any]]:
    roll, acc = rng.random(), 0.0
    arch = ARCHETYPES[-1]
    for a in ARCHETYPES:
        acc += a[1]
        if roll < acc:
            arch = a
            break
    name, _share, (lo, hi), churns = arch
    basket = BASKETS[rng.choice(("coffee", "coffee", "tea", "food"))]
    start = cfg.end - timedelta(days=cfg.days)
    t = start + timedelta(days=rng.uniform(0, cfg.days * (0.3 if name != "one_timer" else 1.0)))
    stop = start + timedelta(days=rng.uniform(cfg.days * 0.3, cfg.days * 0.8)) if churns else cfg.end
    store = f"s-{rng.randrange(cfg.store_count) + 1}"
    cid = f"c-{n:07d}"
    k = 0
    while t < stop:
        k += 1
        items = [_item(rng, basket, half_rubles=True) for _ in range(rng.choice((1, 1, 2, 2, 3)))]
        total = sum(int(str(i["amount"]).replace(".", "")) for i in items)
        local = t.replace(hour=rng.randrange(8, 21), minute=rng.randrange(60), second=rng.randrange(60), microsecond=0)
        rid = f"r-{n:07d}-{k}"
        yield {
            "receipt_id": rid,
            "client_id": cid,
            "store_id": store,
            "occurred_at": local.isoformat(),
            "type": "sale",
            "total": _money(total),
            "currency": "RUB",
            "items": items,
            "original_receipt_id": None,
        }
        if rng.random() < cfg.return_rate:
            full = rng.random() < 0.7
            amount = total if full else max(100, total // 2)
            yield {
                "receipt_id": f"{rid}-ret",
                "client_id": cid,
                "store_id": store,
                "occurred_at": (local + timedelta(hours=rng.uniform(0.1, 20))).isoformat(),
                "type": "return",
                "total": _money(amount),
                "currency": "RUB",
                "original_receipt_id": rid,
            }
        if name == "one_timer":
            break
        t += timedelta(days=rng.uniform(lo, hi))


def generate(cfg: SimConfig) -> Iterator[bytes]:
    """JSON lines in arrival order (event-time order, with the configured disorder)."""
    rng = random.Random(cfg.seed)
    rows: list[tuple[datetime, int, dict[str, Any]]] = []
    seq = 0
    for n in range(cfg.clients):
        for r in _client_receipts(rng, cfg, n):
            rows.append((datetime.fromisoformat(r["occurred_at"]), seq, r))
            seq += 1
            if rng.random() < cfg.anon_rate:
                anon = dict(r, receipt_id=f"{r['receipt_id']}-anon", client_id=None)
                rows.append((datetime.fromisoformat(r["occurred_at"]), seq, anon))
                seq += 1
    end = cfg.end
    arrivals = []
    for t, s, r in rows:
        if t > end:  # a return after the end of the simulated period never happened
            continue
        arrive = t + timedelta(days=rng.uniform(0.1, 3.0)) if rng.random() < cfg.late_rate else t
        arrivals.append((min(arrive, end), s, r))
        if rng.random() < cfg.dup_rate:
            arrivals.append((min(arrive + timedelta(minutes=rng.uniform(0, 30)), end), s, r))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    for _arrive, _s, r in arrivals:
        if rng.random() < cfg.malformed_rate:
            yield rng.choice(MALFORMED)
        yield orjson.dumps(r)


# first names: (Cyrillic, Latin) per gender; Tatyana twice, as CRMs spell it both ways (and
# once as Tatiana)
NAMES = {
    "f": (("Татьяна", "Tatyana"), ("Татьяна", "Tatiana"), ("Анна", "Anna"), ("Мария", "Maria"),
          ("Елена", "Elena"), ("Ольга", "Olga"), ("Наталья", "Natalya"), ("Ирина", "Irina"),
          ("Екатерина", "Ekaterina"), ("Светлана", "Svetlana"), ("Юлия", "Yulia")),
    "m": (("Алексей", "Alexey"), ("Дмитрий", "Dmitry"), ("Сергей", "Sergey"), ("Андрей", "Andrey"),
          ("Иван", "Ivan"), ("Михаил", "Mikhail"), ("Николай", "Nikolay"), ("Павел", "Pavel"),
          ("Артём", "Artyom"), ("Владимир", "Vladimir")),
}
COLOURS = ("red", "yellow", "green", "blue")
ATTRIBUTES = (  # key, values
    ("pet", ("cat", "dog", "parrot")),
    ("favourite_dish", ("ramen", "borscht", "cheesecake", "pelmeni", "caesar salad")),
    ("milk", ("oat", "lactose-free", "almond")),
    ("allergy", (True, False)),
)
MAIL_DOMAINS = ("example.com", "example.org", "example.net")  # reserved: never anybody's mailbox


def _day(rng: random.Random, lo: date, hi: date) -> str:
    return (lo + timedelta(days=rng.randrange(max(1, (hi - lo).days)))).isoformat()


def person(rng: random.Random, doc: dict[str, Any], end: datetime) -> dict[str, Any]:
    """The newer profile fields of a client whose ``doc`` has the first contract's ones: name,
    family, legal entity, app, discount card, labels, attributes, contacts and consent."""
    n = int(doc["client_id"][2:])
    born = date.fromisoformat(doc["birth_date"])
    today = end.date()
    age = (today - born).days // 365
    out: dict[str, Any] = {}
    cyrillic, latin = rng.choice(NAMES[doc["gender"]])
    if rng.random() < 0.9:
        out["first_name"] = cyrillic if rng.random() < 0.7 else latin
    kids = rng.choice((1, 1, 2, 2, 3)) if 24 <= age <= 60 and rng.random() < 0.4 else 0
    first, last = born + timedelta(days=20 * 365), min(today, born + timedelta(days=44 * 365))
    out["children"] = sorted(_day(rng, first, last) for _ in range(kids))
    if age >= 22 and rng.random() < 0.45:
        spouse = born + timedelta(days=rng.randrange(-6 * 365, 6 * 365))
        out["spouse_birth_date"] = min(spouse, today - timedelta(days=18 * 366)).isoformat()
    out["legal_entity"] = rng.random() < 0.03
    registered = datetime.fromisoformat(doc["registered_at"])
    if rng.random() < 0.4:
        app = registered + (end - registered) * rng.random()
        out["app_registered_at"] = app.replace(microsecond=0).isoformat()
    if rng.random() < 0.7:
        out["discount_card"] = f"77{n:07d}{rng.randrange(10_000):04d}"
    roll = rng.random()
    labels = ["black_list"] if roll < 0.015 else ["vip_list"] if roll < 0.045 else []
    if rng.random() < 0.12:
        labels.append(rng.choice(COLOURS))
    out["labels"] = labels
    out["attributes"] = {key: rng.choice(values) for key, values in ATTRIBUTES if rng.random() < 0.25}
    consent: dict[str, bool] = {}
    if rng.random() < 0.75:
        user = f"{latin if rng.random() < 0.1 else latin.lower()}.{born.year}{n % 1000:03d}"
        out["email"] = f"{user}@{rng.choice(MAIL_DOMAINS)}"  # the edge lower-cases it
        consent["email"] = rng.random() < 0.8
    if rng.random() < 0.85:
        d = f"{rng.randrange(10**9):09d}"  # written as CRMs do; the edge keeps the digits
        out["phone"] = f"+7 (9{d[:2]}) {d[2:5]}-{d[5:7]}-{d[7:]}" if rng.random() < 0.15 else f"+79{d}"
        consent["sms"] = rng.random() < 0.6
        if rng.random() < 0.3:
            consent["messenger"] = True
        if rng.random() < 0.1:
            consent["call"] = False
    if "app_registered_at" in out:
        consent["push"] = rng.random() < 0.85
    out["consent"] = consent
    return out


def profile_docs(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """CRM profiles (as dicts) for 60% of the simulated clients (same seed, same ids), then
    :attr:`SimConfig.new_clients` profiles of clients registered in the last two weeks who
    have bought nothing yet (ids after the buyers'). The fields of the first contract
    (birth date, gender, city, registration, tags) come from their own random stream, so they
    are the same as before the newer fields (names, family, contacts, consent...) existed."""
    rng = random.Random(cfg.seed + 7919)
    more = random.Random(cfg.seed + 2_750_159)  # the newer fields
    start = cfg.end - timedelta(days=cfg.days)
    for n in range(cfg.clients):
        if rng.random() >= 0.6:
            continue
        born = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 55 * 365))
        doc: dict[str, Any] = {
            "client_id": f"c-{n:07d}",
            "birth_date": born.date().isoformat(),
            "gender": rng.choice(("f", "m")),
            "city": rng.choice(("Moscow", "Kazan", "Voronezh")),
            "registered_at": start.isoformat(),
            "tags": [],
        }
        doc.update(person(more, doc, cfg.end))
        yield doc
    recent = min(cfg.days, 14)
    for k in range(round(cfg.clients * cfg.new_clients)):
        born = datetime(1960, 1, 1) + timedelta(days=more.randrange(0, 45 * 365))
        registered = cfg.end - timedelta(days=more.uniform(0.05, recent))
        doc = {
            "client_id": f"c-{cfg.clients + k:07d}",
            "birth_date": born.date().isoformat(),
            "gender": more.choice(("f", "m")),
            "city": more.choice(("Moscow", "Kazan", "Voronezh")),
            "registered_at": registered.replace(microsecond=0).isoformat(),
            "tags": [],
        }
        doc.update(person(more, doc, cfg.end))
        yield doc


def profiles(cfg: SimConfig) -> Iterator[bytes]:
    """:func:`profile_docs` as JSON lines."""
    for doc in profile_docs(cfg):
        yield orjson.dumps(doc)


def live(cfg: SimConfig, duration: float, clock: Any) -> Iterator[bytes]:
    """Receipts stamped with the current time (``clock()``), for ``duration`` seconds.

    Clients are drawn from the same id space as :func:`generate`, weighted so that a few
    are frequent; each receipt is a sale of 1-3 items.
    """
    rng = random.Random(cfg.seed + 104_729)
    started = clock()
    n = 0
    while (clock() - started).total_seconds() < duration:
        n += 1
        client = int(cfg.clients * rng.random() ** 2)
        basket = BASKETS[("coffee", "tea", "food")[client % 3]]
        items = [_item(rng, basket, half_rubles=False) for _ in range(rng.choice((1, 2, 3)))]
        total = sum(int(str(i["amount"]).replace(".", "")) for i in items)
        yield orjson.dumps(
            {
                "receipt_id": f"live-{cfg.seed}-{started.timestamp():.0f}-{n}",
                "client_id": f"c-{client:07d}",
                "store_id": f"s-{client % cfg.store_count + 1}",
                "occurred_at": clock().isoformat(),
                "type": "sale",
                "total": _money(total),
                "currency": "RUB",
                "items": items,
            }
        )
