//! PostgreSQL wire protocol v3 (being written).
