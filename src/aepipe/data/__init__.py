"""Dataset sources and the prepared-dataset format shared by every stage."""
