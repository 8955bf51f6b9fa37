"""From a source to batches of uint8 crops (§4.1, §5): each item's window, flip and lighting
draw seeded by (seed, epoch, index), and the two loaders that assemble them: worker processes
(`make_loader`, any source) and threads of this process (`make_threaded_loader`, a store)."""
