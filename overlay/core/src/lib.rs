//! petal-core
