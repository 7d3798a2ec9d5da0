"""Pure protocol rules: records, events and state machines. No I/O lives here."""
