//! Real PostgreSQL and Redis servers started by the tests (see scripts/install-test-deps.sh).
