"""Reading and writing videos, frames and masks."""
