"""The one table of the ordered configuration actions aiopyramid_ng registers.

Pyramid runs a commit's actions by ``order`` (then in registration order).
Each entry says, by its unique name, when one of the add-on's actions runs
and why there.  It lives in its own module, not in the package's
``__init__``, so that the modules registering the actions can import it
without an import cycle.
"""

from __future__ import annotations

from pyramid.interfaces import PHASE0_CONFIG, PHASE1_CONFIG, PHASE2_CONFIG, PHASE3_CONFIG

__all__ = ["ORDERS"]

ORDERS: dict[str, int] = {
    # Early, so the setting is checked at commit and set_executor() (ordinary
    # order) replaces the default pool.
    "register_executor": PHASE0_CONFIG,
    # After add_renderer (PHASE1); renderers are looked up when first used.
    "wrap_renderer_factories": PHASE1_CONFIG + 1,
    # After Pyramid registers the security policy (PHASE2) and before views
    # are built (PHASE3): a view's permission check keeps the policy it finds
    # when it is built.
    "wrap_security_policy": (PHASE2_CONFIG + PHASE3_CONFIG) // 2,
    # After every ordinary action, so every add_traverser() is registered:
    # the ContextFound check is subscribed only if another traverser exists.
    "check_unawaited_contexts": 9_000,
    # After every ordinary action, so the session factory registered last is seen.
    "wrap_session_factory": 9_000,
    # After every ordinary action (so it wraps pyramid_retry's policy, say) and
    # before wrap_execution_policy, so the request greenlet (or the worker
    # thread) is already where this policy runs.
    "wrap_transaction_policy": 9_000,
    # Last: the execution policy it wraps is the final one whichever add-on
    # (pyramid_retry, ...) set it.
    "wrap_execution_policy": 10_000,
    # Right after it: aiopyramid_ng.otel's span layer goes around the wrapped policy.
    "trace_requests": 10_001,
}
