"""The original recipe jobdeck grew from: FastAPI ``BackgroundTasks`` and a module-level dict.

The baseline of ``bench/http_submit.py``, served the same way as ``jobdeck serve --workers 2``:

    gunicorn -w 2 -k uvicorn.workers.UvicornWorker original_app:app   # from bench/

Its routes, answers and job behave as the recipe's do: a job lives in the memory of the one
API process that started it, runs in that process's thread pool after the answer is sent
(one second per step, printing and logging each step to ``original_app.log`` in the working
directory), and nothing is stored. The answers are
the recipe's Python sets, which FastAPI sends as JSON lists. Only the spelling is modern
(f-strings, built-in generics); no behaviour changed. The routes keep the recipe's missing
return annotations: FastAPI would otherwise validate every answer against them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from time import sleep

from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel

app = FastAPI()

logger = logging.getLogger(__name__)
logger.setLevel(10)
logger_fh = logging.FileHandler(__name__ + ".log")
logger.addHandler(logger_fh)


def _now() -> str:
    return f"{datetime.now():%H:%M:%S}"


class Job(BaseModel):
    """非同期処理での Job を定義したジョブクラス"""

    job_id: int
    n_steps: int = 10
    job_status: str = "RUNNING"
    is_cancelled: bool = False

    def __call__(self) -> None:
        jobs[self.job_id] = self
        self.job_status = "RUNNING"
        print(f"[Job] time {_now()} | step {0} | Job {self.job_id} が開始されました")
        logger.info(f"[Job] time {_now()} | step {0} | Job {self.job_id} が開始されました")

        for step in range(self.n_steps):
            # ジョブの処理
            sleep(1)
            print(f"[Job] time {_now()} | step {step} | Job {self.job_id} を実行中です")
            logger.info(f"[Job] time {_now()} | step {step} | Job {self.job_id} を実行中です")
            if self.is_cancelled:
                del jobs[self.job_id]
                self.job_status = "CANCELLED"
                print(f"[Job] time {_now()} | step {step} | Job {self.job_id} が中断されました")
                logger.info(
                    f"[Job] time {_now()} | step {step} | Job {self.job_id} が中断されました"
                )
                break

        # del jobs[self.job_id]
        self.job_status = "FINISHED"
        print(f"[Job] time {_now()} | step {step} | Job {self.job_id} が終了しました")
        logger.info(f"[Job] time {_now()} | step {step} | Job {self.job_id} が終了しました")
        return


jobs: dict[int, Job] = {}


@app.get("/")
async def root():
    return "Hello Flask-API Server!\n"


@app.get("/health")
async def health():
    return {"health": "ok"}


@app.get("/metadata")
async def metadata():
    return jobs


@app.get("/get_job/{job_id}")
async def get_job(
    job_id: int,  # パスパラメーター
):
    if job_id in jobs:
        return jobs[job_id]
    else:
        return {"message", f"ジョブID : {job_id} のジョブは実行されていません"}


@app.post("/start_job/{job_id}")
async def start_job(
    job_id: int,  # パスパラメーター
    n_steps: int,  # クエリパラメーター
    background_tasks: BackgroundTasks,  # BackgroundTasks
):
    # ジョブクラスのオブジェクト作成
    task = Job(job_id=job_id, n_steps=n_steps)

    # BackgroundTasks にジョブを追加
    background_tasks.add_task(task)

    return {"message", f"ジョブID : {job_id} のジョブを開始しました"}


@app.post("/stop_job/{job_id}")
async def stop_job(
    job_id: int,  # パスパラメーター
    background_tasks: BackgroundTasks,  # BackgroundTasks
):
    # job のリストから作成済みのジョブオブジェクトを取得
    # dict の get() を使用することで、キーが存在しない場合にエラーを発生させずに任意の値を取得する
    task = jobs.get(job_id)
    if task is None:
        return {"message", f"ジョブID : {job_id} のジョブは実行されていません"}

    # ジョブの中断フラグを ON にする
    task.is_cancelled = True
    return {"message", f"ジョブID : {job_id} のジョブを中断しました"}
