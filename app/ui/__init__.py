"""Qt widgets, pages and dialogs of the Quantdesk GUI."""
