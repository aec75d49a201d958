"""Teachers: their specs, the backends that reach them, and the pool that keeps them busy."""

from persyn_hf.teachers.spec import TeacherSpec, load_teachers

__all__ = ["TeacherSpec", "load_teachers"]
