/** Files from a drop: a dropped folder is walked (one level of nesting is typical for HF folders). */
export async function filesFromDrop(transfer: DataTransfer): Promise<{ files: File[]; folderName: string | null }> {
  const entries = [...transfer.items].map((item) => item.webkitGetAsEntry()).filter((e): e is FileSystemEntry => e !== null);
  const folder = entries.length === 1 && entries[0]!.isDirectory ? entries[0]!.name : null;
  const files: File[] = [];
  for (const entry of entries) files.push(...(await walk(entry)));
  if (files.length === 0) files.push(...transfer.files);
  return { files, folderName: folder };
}

async function walk(entry: FileSystemEntry): Promise<File[]> {
  if (entry.isFile) {
    return [await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject))];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const children: FileSystemEntry[] = [];
  // readEntries returns at most ~100 entries per call; keep asking until it returns none.
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  return (await Promise.all(children.map(walk))).flat();
}

/** The model's name: the folder's name when a folder was chosen, else the config's name or "model". */
export function modelNameFrom(files: readonly File[], folderName: string | null): string {
  if (folderName) return folderName;
  const relative = files.find((f) => f.webkitRelativePath)?.webkitRelativePath;
  if (relative?.includes('/')) return relative.slice(0, relative.indexOf('/'));
  return 'model';
}
