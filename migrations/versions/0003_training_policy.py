"""training policy on upgrades: train by itself once enough pairs arrive, retrain as they double

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('upgrades') as batch:
        batch.add_column(sa.Column('policy_min_pairs', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('policy_method', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('policy_trained_pairs', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('upgrades') as batch:
        batch.drop_column('policy_trained_pairs')
        batch.drop_column('policy_method')
        batch.drop_column('policy_min_pairs')
