"""Application services, one per use case: pay, refund, callbacks, reconciliation, notifications."""
