//! selfsign (to be written).
