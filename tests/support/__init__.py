"""Helpers of the tests (servers, a headless browser, judge pairs, bad inputs, the reliability tally): no tests."""
