"""training policy: fit near the gallery

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The per-item m of pair selection near the gallery for policy-started trainings (None: every pair).
    op.add_column('upgrades', sa.Column('policy_near_gallery', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('upgrades') as batch:  # SQLite drops a column by rebuilding the table
        batch.drop_column('policy_near_gallery')
