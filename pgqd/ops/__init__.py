"""The operators' side: the read-side queries shared by `pgqd dashboard`, `pgqd jobs`, the web UI and the MCP
tools (`stats`, `browse`), and the MCP server. Nothing here is public API."""
