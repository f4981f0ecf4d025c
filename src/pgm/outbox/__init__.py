"""The transactional outbox: messages written with the change they report, delivered in order later."""
