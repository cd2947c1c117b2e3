"""route tables: the versions of the global route table, shared by every replica

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "route_tables",
        # Numbered by the writer (newest + 1), never by the database: the key is the write conflict.
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table("route_tables")
