"""Speech and text as drivers (DESIGN.md §2): audio or a sentence → a landmark track for the renderer."""
