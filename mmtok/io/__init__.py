"""Reading rows in (sources) and writing them out (sinks), in one row schema."""
