"""items.color, which release 2's code reads

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("items", sa.Column("color", sa.String(20), nullable=False, server_default="blue"))


def downgrade():
    with op.batch_alter_table("items") as batch:
        batch.drop_column("color")
