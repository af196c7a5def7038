"""index journal: writes in progress on a shared engine (Milvus), for repair after a writer dies

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'index_journal',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('seq_before', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_index_journal_collection_id', 'index_journal', ['collection_id'])


def downgrade() -> None:
    op.drop_index('ix_index_journal_collection_id', table_name='index_journal')
    op.drop_table('index_journal')
