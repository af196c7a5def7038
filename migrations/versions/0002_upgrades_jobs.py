"""upgrades, transformations, jobs, item history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:19:22.146874
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Double(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('log', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_state', ['state'], unique=False)

    op.create_table('upgrades',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('old_model_id', sa.Integer(), nullable=False),
    sa.Column('new_model_id', sa.Integer(), nullable=False),
    sa.Column('active_transformation_id', sa.Integer(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['new_model_id'], ['models.id'], ),
    sa.ForeignKeyConstraint(['old_model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('old_model_id', 'new_model_id', name='uq_upgrades_old_new')
    )
    op.create_table('collection_retirements',
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('collection_id', 'model_id')
    )
    op.create_table('transformations',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('upgrade_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('passes_ecc', sa.Boolean(), nullable=False),
    sa.Column('evaluation', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['upgrade_id'], ['upgrades.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('upgrade_pairs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('upgrade_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=True),
    sa.Column('old_vector', sa.LargeBinary(), nullable=False),
    sa.Column('new_vector', sa.LargeBinary(), nullable=False),
    sa.Column('label', sa.String(length=256), nullable=True),
    sa.ForeignKeyConstraint(['upgrade_id'], ['upgrades.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('upgrade_id', 'key', name='uq_upgrade_pairs_key')
    )
    op.create_table('item_history',
    sa.Column('item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('item_id', 'model_id')
    )


def downgrade() -> None:
    op.drop_table('item_history')
    op.drop_table('upgrade_pairs')
    op.drop_table('transformations')
    op.drop_table('collection_retirements')
    op.drop_table('upgrades')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state')

    op.drop_table('jobs')
