"""The run engine: plan → fan-out → follow → events. Knows no CLI, no HTTP server, no sink."""
