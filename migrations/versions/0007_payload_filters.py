"""payload filters: jsonb payloads on PostgreSQL, declared payload indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        # jsonb: type-exact equality, containment and expression indexes for payload filters.
        op.execute('ALTER TABLE items ALTER COLUMN payload TYPE jsonb USING payload::jsonb')
    op.create_table(
        'payload_indexes',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('collection_id', sa.Integer(), nullable=False),
        sa.Column('field', sa.String(length=520), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('collection_id', 'field', name='uq_payload_indexes_collection_field'),
    )


def downgrade() -> None:
    bind = op.get_bind()
    for (index_id,) in bind.execute(sa.text('SELECT id FROM payload_indexes')):
        for suffix in ('', '_num'):
            op.execute(f'DROP INDEX IF EXISTS ix_payload_{int(index_id)}{suffix}')
    op.drop_table('payload_indexes')
    if bind.dialect.name == 'postgresql':
        op.execute('ALTER TABLE items ALTER COLUMN payload TYPE json USING payload::json')
