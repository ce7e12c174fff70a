//! Redis RESP2/RESP3 (being written).
