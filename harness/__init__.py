"""The experiment machinery: specs, planning, cache, tracking, execution, reports and the CLI."""
