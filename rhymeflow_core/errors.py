"""One exception type for bad input, so ComfyUI shows our message, not a deep stack trace."""


class RhymeFlowInputError(ValueError):
    """Raised for input RhymeFlow cannot use; the message names the problem and the fix."""

    def __init__(self, message: str):
        super().__init__(f"RhymeFlow: {message}")
