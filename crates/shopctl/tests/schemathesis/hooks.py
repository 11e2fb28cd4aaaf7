"""A check of ours for schemathesis, loaded through SCHEMATHESIS_HOOKS by tests/openapi.rs."""

import schemathesis

# The 422s POST /orders may answer to a request its schema allows: each depends on what the
# service knows (its catalog replica, its coupon replica, earlier requests), not on the request.
STATE_DEPENDENT_REFUSALS = {
    "unknown_product",
    "coupon_not_owned",
    "duplicate_product",
    "total_too_large",
    "idempotency_key_reused",
}


@schemathesis.check
def order_refusals_depend_only_on_state(ctx, response, case):
    """A schema-valid order is refused with 422 only for a reason its schema cannot know."""
    if case.method.upper() != "POST" or case.path != "/orders" or response.status_code != 422:
        return None
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    code = response.json().get("error", {}).get("code")
    if code not in STATE_DEPENDENT_REFUSALS:
        raise AssertionError(
            f"a schema-valid order was refused with 422 `{code}`, a rule the document does not state"
        )
    return None
