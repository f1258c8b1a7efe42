"""kucero's test suite: unit (pure logic, real node trees), crash, and integration tests against
a real control plane built by tests/controlplane/build.sh."""
