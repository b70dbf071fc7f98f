//! certbridge-dns: follow `_acme-challenge` CNAMEs, publish TXT values, verify every
//! authoritative server answers them.
