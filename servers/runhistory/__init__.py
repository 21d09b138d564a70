"""RunHistory: stores LangGraph runs, embeds their outputs, announces them to the registry."""
