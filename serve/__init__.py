"""Stage 4: Ray Serve for micro and macro prediction; predict and evaluate (issues #7, #8)."""
