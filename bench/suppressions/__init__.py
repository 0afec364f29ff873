"""The suppression-list benchmark: one million entries imported into one mta-relay of a pair, the time
until its peer holds them, memory, disk, and what a lookup costs (in process and as an RCPT round trip),
beside Postfix refusing the same addresses from a ``check_recipient_access`` hash table. See
bench/README.md."""
