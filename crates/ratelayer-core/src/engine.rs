//! The limiter engine: buckets, reservations, leases and learned limits behind a store
//! trait. Being built.
