import pytest
from support import VARIANTS, bake, variant_id


@pytest.fixture(scope="session", params=VARIANTS, ids=variant_id)
def baked(request, cookies_session):
    """Each variant baked once per run; tests read the bake and never change it."""
    return bake(cookies_session, **request.param)
