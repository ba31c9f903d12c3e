"""Workers per device, the chunk queue, overlap assembly and the resume journal."""
