"""The stand-in WA client's ``messages`` table: created and filled on MySQL, PostgreSQL or SQLite.

The real client's schema is not published; this one has what the exporter and the
stand-in's message GC rely on: a row per message, a direction and a status, and
``status = 'read'`` marking the rows that message GC may delete.
"""

from __future__ import annotations

import random

import sqlalchemy as sa

metadata = sa.MetaData()

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("message_id", sa.String(64), nullable=False),
    sa.Column("chat_id", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("body", sa.Text()),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
)

STATUSES_IN = ("received", "read")
STATUSES_OUT = ("sent", "delivered", "read", "failed")
TYPES = ("text", "text", "text", "image", "document", "audio", "video")


def create_messages_table(engine: sa.Engine) -> None:
    metadata.create_all(engine, tables=[messages])


def message_rows(count: int, *, read_fraction: float = 0.5, seed: int = 1,
                 start: int = 1_700_000_000) -> list[dict[str, object]]:
    """Realistic-looking rows; about ``read_fraction`` of them have status ``read``."""
    rnd = random.Random(seed)
    rows = []
    for i in range(count):
        incoming = rnd.random() < 0.6
        if rnd.random() < read_fraction:
            status = "read"
        else:
            status = rnd.choice(STATUSES_IN[:1] if incoming else ("sent", "delivered", "failed"))
        rows.append({
            "message_id": f"wamid.{seed:04d}{i:012d}",
            "chat_id": f"{rnd.randrange(10**10, 10**11)}",
            "direction": "in" if incoming else "out",
            "type": rnd.choice(TYPES),
            "status": status,
            "body": "x" * rnd.randrange(8, 200),
            "created_at": start + i * 7,
        })
    return rows


def insert_messages(engine: sa.Engine, count: int, *, read_fraction: float = 0.5,
                    seed: int = 1, batch: int = 5000) -> None:
    done = 0
    while done < count:
        n = min(batch, count - done)
        with engine.begin() as conn:
            rows = message_rows(n, read_fraction=read_fraction, seed=seed + done,
                                start=1_700_000_000 + done)
            conn.execute(messages.insert(), rows)
        done += n
