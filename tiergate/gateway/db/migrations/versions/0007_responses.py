"""responses: what the Responses door stores (`store`, `previous_response_id`, GET/DELETE /v1/responses/{id})

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=True),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("previous_id", sa.String(length=64), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_responses_tenant_created", "responses", ["tenant_id", "created_ms"], unique=False)
    op.create_index(op.f("ix_responses_created_ms"), "responses", ["created_ms"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_responses_created_ms"), table_name="responses")
    op.drop_index("ix_responses_tenant_created", table_name="responses")
    op.drop_table("responses")
