"""eztag's tests, arranged like the package: tests/X/ holds the tests of eztag/X/, tests/support/ their helpers."""
