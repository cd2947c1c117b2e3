"""Every table module, imported so that `metadata` (what Alembic compares against) knows all tables."""

from __future__ import annotations

from sqlmodel import SQLModel

from tiergate.gateway.db import learning as learning
from tiergate.gateway.db import models as models

metadata = SQLModel.metadata
