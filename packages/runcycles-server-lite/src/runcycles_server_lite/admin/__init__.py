"""The admin plane: tenants, API keys, budgets, policies, audit and the overview.

``routes()`` is the plane's route table; each module holds one resource's handlers, and
``common``, ``models`` and ``responses`` the parts they share.
"""

from .routes import routes

__all__ = ["routes"]
