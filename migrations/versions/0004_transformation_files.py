"""transformation files in the database: every service replica can load a trained transformation

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 13:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'transformation_files',
        sa.Column('transformation_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['transformation_id'], ['transformations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('transformation_id', 'name'),
    )


def downgrade() -> None:
    op.drop_table('transformation_files')
