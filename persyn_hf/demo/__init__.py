"""The embedded demo world: problems, teachers and student trained locally, and the `persyn-hf demo` run."""
