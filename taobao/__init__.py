"""Client for the Taobao Open Platform (TOP) REST gateway: signing, errors, models, calls."""
